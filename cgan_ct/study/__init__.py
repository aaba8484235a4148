"""cgan_ct.study."""
