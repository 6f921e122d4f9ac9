DROP TABLE ves_projection_documents;
DROP TABLE ves_projection_checkpoints;
