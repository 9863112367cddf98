"""How SafeCut runs here: CPU, devices, ORT/OpenVINO sessions, model cache, memory; may import no engines/models/app."""
