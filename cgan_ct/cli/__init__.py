"""cgan_ct.cli."""
