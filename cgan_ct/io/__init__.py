"""cgan_ct.io."""
