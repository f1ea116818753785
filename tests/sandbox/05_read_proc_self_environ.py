# case: read /proc/self/environ
# expect: PermissionError
print(open('/proc/self/environ', 'rb').read())
