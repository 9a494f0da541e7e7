"""seqedge sweep: a matrix of models × recipes × formats × devices as Ray tasks (spec, tasks, engine, results)."""
