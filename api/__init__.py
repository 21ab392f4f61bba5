"""The REST API door (DRF): views and serializers over the domain's services and selectors."""
