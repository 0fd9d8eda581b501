"""HTTP routes: thin handlers over the live, stills and status services."""
