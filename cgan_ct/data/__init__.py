"""cgan_ct.data."""
