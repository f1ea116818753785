# case: import socket
# expect: ImportError: import of 'socket' is not allowed
import socket
s = socket.create_connection(('127.0.0.1', {PORT}))
