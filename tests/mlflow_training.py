"""The training script the MLflow tests run in a separate process, as a user would."""

TRAINING_SCRIPT = '''
"""A user's training script: stock mlflow, configured only by the environment."""
import json, sys
import mlflow, mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

name, requirements, tags = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
if tags:
    mlflow.MlflowClient().create_registered_model(name, tags=tags)
data = load_iris(as_frame=True)
X = data.data.set_axis(["sepal_length", "sepal_width", "petal_length", "petal_width"], axis=1)
model = LogisticRegression(max_iter=300).fit(X, data.target)
mlflow.set_experiment("iris-training")
with mlflow.start_run() as run:
    mlflow.log_param("max_iter", 300)
    mlflow.log_metric("accuracy", 0.97)
    mlflow.set_tag("mlflow.source.git.commit", "deadbeef")
    mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),
                             registered_model_name=name or None,
                             pip_requirements=requirements,
                             serialization_format="cloudpickle")
print("RUN_ID=" + run.info.run_id)
'''
