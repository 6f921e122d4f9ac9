DROP TABLE agent_event_policies;
