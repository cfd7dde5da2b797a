"""Software-defined assets, one module per stage; each stage's checks live beside its assets."""
