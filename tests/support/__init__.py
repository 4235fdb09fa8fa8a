"""What the tests share: tiny models (`zoo`), exported bundles (`bundles`), every tier in this
process (`stack`), the CLI in fresh processes (`cli`), the oracles (`oracle`), serving configs
without a bundle (`configs`), and the load `tiers/test_netns.py` runs in a namespace (`netns_load`)."""
