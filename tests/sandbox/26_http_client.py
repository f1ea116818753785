# case: http.client to the listener
# expect: ImportError
import http.client
http.client.HTTPConnection('127.0.0.1', {PORT}).request('GET', '/')
