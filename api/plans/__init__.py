"""Plan endpoints: submit, read, act on and follow plans."""
