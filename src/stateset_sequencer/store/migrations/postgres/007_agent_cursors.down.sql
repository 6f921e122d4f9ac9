DROP TABLE ves_agent_cursors;
