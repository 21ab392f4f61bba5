"""Developer scripts: throwaway servers for `make run` and `make test`, and the size check of `make lint`."""
