# case: read the canary through io.FileIO
# expect: PermissionError
import io
print(io.FileIO('{CANARY}').read())
