# case: import subprocess
# expect: ImportError: import of 'subprocess' is not allowed
import subprocess
subprocess.run(['cat', '{CANARY}'])
