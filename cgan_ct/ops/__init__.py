"""cgan_ct.ops."""
