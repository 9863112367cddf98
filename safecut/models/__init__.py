"""Where weights come from and why they are trusted (folders, downloads, checksums, lock); may import runtime only."""
