"""Denoiser networks of the flow generator presets (``small``: pixel space; ``sd15``: Stable Diffusion)."""
