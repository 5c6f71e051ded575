"""What commands print: the bundle table and a pipeline run's progress, shared so commands never import each other."""
