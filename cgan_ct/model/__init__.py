"""cgan_ct.model."""
