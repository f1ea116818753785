# case: DNS lookup
# expect: ImportError
import socket
print(socket.gethostbyname('example.com'))
