# case: read the host's /proc entry
# expect: PermissionError
print(open('/proc/{HOST_PID}/environ', 'rb').read())
