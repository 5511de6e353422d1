"""MovieLens RecSys: shared configuration, Spark session, datasets and schema."""
