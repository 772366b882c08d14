"""Model optimisers (DXTK): rank choice, factorisations, separation, precision, cleaning."""
