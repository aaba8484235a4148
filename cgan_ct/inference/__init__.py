"""cgan_ct.inference.inference."""
