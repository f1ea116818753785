# case: read the resolver configuration
# expect: PermissionError
print(open('/etc/resolv.conf').read())
