"""The flow generator: initial image + instruction + query points → future object flow (a diffusion model)."""
