"""How SafeCut is used: CLI, headless pipeline, RunPod client, workflow generator; may import every layer below."""
