"""cgan_ct.synthesis.synthesis."""
