"""Flow-conditioned diffusion policies, their training and closed-loop evaluation; ``policies.sim`` is
the MuJoCo world they are trained (on play data) and evaluated in."""
