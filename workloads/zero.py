"""DeepSpeed ZeRO variants (registered into VARIANTS when this module imports)."""
