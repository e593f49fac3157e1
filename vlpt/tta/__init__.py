"""Test-time adaptation: augmented and diffusion-generated views of a test image, view selection, episodic state."""
