"""The planted models (`planted`: a tiny LLaVA whose heads find colours) and seeded scenes (`scenes`,
`scene_folder`): the test fixtures and the offline demo."""
