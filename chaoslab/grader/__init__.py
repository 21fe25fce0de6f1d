"""The grader: a fixed rubric of black-box checks that grades a submission of the TP.

``rubric`` decides the points; ``checks`` runs the experiments on a ``target``
(``lab_target`` for this lab's own stack); ``outputs`` writes JUnit, Gradescope,
GitHub Classroom and the student's FEEDBACK.md.
"""
