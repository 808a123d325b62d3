"""The grounding method (Kang et al., CVPR 2025), as pure functions: localization-head criteria and discovery
(`heads`), head maps to regions and boxes (`maps`), original pixels <-> token grids (`frame`), and the grounder
that turns an engine's maps into a `Proposal` (`grounder`). No Qt, no model loading: the bottom layer."""
