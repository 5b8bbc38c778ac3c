"""Classical analysis methods: 3D-Var and the LETKF."""
