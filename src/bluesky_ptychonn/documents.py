"""placeholder"""
def read_start(doc, warn=True):
    return doc
