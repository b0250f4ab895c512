# placeholder until the report stage lands (being written now)
def add_report_arguments(parser):
    pass
