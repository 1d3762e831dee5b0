"""Pure tensor operations that any layer may use (conditioning resizes, tiled application): torch only,
nothing of lit_diffsr imported, so diffusion/, nets/, data/ and methods/ all sit above them."""
