import subprocess
import sys

PROBE = """
import sys
from gateway.app import create_app
create_app()
forbidden = {'torch', 'transformers', 'sentence_transformers', 'services'}
leaked = sorted(m for m in sys.modules if m.split('.')[0] in forbidden)
print(leaked)
sys.exit(1 if leaked else 0)
"""


def test_building_the_gateway_imports_no_torch_and_no_worker_code():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
