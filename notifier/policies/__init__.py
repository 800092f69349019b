"""Pure policy functions: plain values in, a decision with its reason out. No database, no clock."""
