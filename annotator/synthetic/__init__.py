"""The planted models (`planted`: a tiny LLaVA, `planted_qwen`: a tiny Qwen2-VL, sharing the text decoder
`planted_decoder`; their heads find colours) and seeded scenes (`scenes`, `scene_folder`): the test fixtures and the
offline demo."""
