DROP TABLE ves_commitments;
