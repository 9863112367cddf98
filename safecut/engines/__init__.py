"""What SafeCut does (BEN2, Florence-2, NudeNet, gate, guard); may import models, runtime, shared; never app/ComfyUI."""
