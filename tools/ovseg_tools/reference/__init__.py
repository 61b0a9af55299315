"""References of the runtime's steps and the parity fixtures they write (scripts/make-fixtures.sh)."""
