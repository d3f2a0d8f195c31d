"""`python -m audio_interaction <verb>` == `audio-interaction <verb>`."""

import sys

from audio_interaction.apps.cli import main

sys.exit(main())
