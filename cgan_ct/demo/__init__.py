"""cgan_ct.demo.run."""
