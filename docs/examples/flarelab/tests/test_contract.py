"""Every learnware declared by flarelab passes learndock's contract suite."""


def test_contract(learndock_case, learndock_check):
    learndock_check(learndock_case)
