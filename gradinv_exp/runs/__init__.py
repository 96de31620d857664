"""Run folders: their files, faults and interrupts, resume, and the checks before any job."""
