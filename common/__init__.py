"""What every layer shares and that belongs to none of them: the domain error base."""
