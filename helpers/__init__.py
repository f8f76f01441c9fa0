"""The harness library, one module per pipeline stage:

    dataset -> source -> render -> build -> publish -> image_facts -> verify -> report

`pipeline` runs one commit through them; `config` parses the options once, at the edge.
"""
