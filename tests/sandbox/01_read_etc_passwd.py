# case: read /etc/passwd
# expect: PermissionError
print(open('/etc/passwd').read())
